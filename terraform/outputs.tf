output "cluster_id" {
  description = "EMR cluster id (aws emr add-steps --cluster-id ...)."
  value       = aws_emr_cluster.this.id
}

output "master_public_dns" {
  value = aws_emr_cluster.this.master_public_dns
}

output "data_bucket" {
  value = aws_s3_bucket.this["data"].bucket
}

output "models_bucket" {
  value = aws_s3_bucket.this["models"].bucket
}

output "mlflow_artifacts_bucket" {
  description = "Artifact root for the tracking server (mlflow server --artifacts-destination s3://...)."
  value       = aws_s3_bucket.this["mlflow"].bucket
}

output "emr_steps_json" {
  description = "The pipeline step as JSON: aws emr add-steps --cluster-id ... --steps \"$(terraform output -raw emr_steps_json)\"."
  value = jsonencode([{
    Type            = "CUSTOM_JAR"
    Name            = "sparkpipe run"
    ActionOnFailure = "CONTINUE"
    Jar             = "command-runner.jar"
    Args            = local.run_pipeline
  }])
}
