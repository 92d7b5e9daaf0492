# sparkpipe on Amazon EMR: S3 buckets for data, models and MLflow artifacts, the IAM roles EMR needs,
# and a Spark cluster whose bootstrap action installs the sparkpipe wheel; a step runs the pipeline
# (`sparkpipe run` through spark-submit on YARN). See the README's Deploy section.

data "aws_caller_identity" "current" {}

locals {
  suffix       = data.aws_caller_identity.current.account_id
  buckets      = { data = "${var.name}-data-${local.suffix}", models = "${var.name}-models-${local.suffix}", mlflow = "${var.name}-mlflow-${local.suffix}" }
  wheel_key    = "dist/${basename(var.wheel_path)}"
  config_key   = "config/pipeline_config.yaml"
  python       = "python3.11"
  run_pipeline = ["bash", "-c", "aws s3 cp s3://${aws_s3_bucket.this["models"].bucket}/${local.config_key} /tmp/sparkpipe.yaml && spark-submit --master yarn --deploy-mode client --conf spark.pyspark.python=${local.python} --conf spark.pyspark.driver.python=${local.python} $(${local.python} -c 'import sparkpipe.__main__ as m; print(m.__file__)') run --config /tmp/sparkpipe.yaml"]
}

# ----------------------------------------------------------------------------- S3
resource "aws_s3_bucket" "this" {
  for_each = local.buckets
  bucket   = each.value
}

resource "aws_s3_bucket_public_access_block" "this" {
  for_each                = aws_s3_bucket.this
  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  for_each = aws_s3_bucket.this
  bucket   = each.value.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_versioning" "models" {
  bucket = aws_s3_bucket.this["models"].id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_object" "wheel" {
  bucket = aws_s3_bucket.this["models"].id
  key    = local.wheel_key
  source = var.wheel_path
  etag   = filemd5(var.wheel_path)
}

resource "aws_s3_object" "config" {
  bucket = aws_s3_bucket.this["models"].id
  key    = local.config_key
  source = var.pipeline_config_path
  etag   = filemd5(var.pipeline_config_path)
}

resource "aws_s3_object" "bootstrap" {
  bucket = aws_s3_bucket.this["models"].id
  key    = "bootstrap/install_sparkpipe.sh"
  source = "${path.module}/bootstrap/install_sparkpipe.sh"
  etag   = filemd5("${path.module}/bootstrap/install_sparkpipe.sh")
}

# ----------------------------------------------------------------------------- IAM
data "aws_iam_policy_document" "assume" {
  for_each = { emr = "elasticmapreduce.amazonaws.com", ec2 = "ec2.amazonaws.com" }
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = [each.value]
    }
  }
}

resource "aws_iam_role" "emr_service" {
  name               = "${var.name}-emr-service"
  assume_role_policy = data.aws_iam_policy_document.assume["emr"].json
}

resource "aws_iam_role_policy_attachment" "emr_service" {
  role       = aws_iam_role.emr_service.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"
}

resource "aws_iam_role" "emr_instance" {
  name               = "${var.name}-emr-instance"
  assume_role_policy = data.aws_iam_policy_document.assume["ec2"].json
}

data "aws_iam_policy_document" "buckets" {
  statement {
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [for b in aws_s3_bucket.this : b.arn]
  }
  statement {
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = [for b in aws_s3_bucket.this : "${b.arn}/*"]
  }
}

resource "aws_iam_role_policy" "buckets" {
  name   = "${var.name}-buckets"
  role   = aws_iam_role.emr_instance.id
  policy = data.aws_iam_policy_document.buckets.json
}

resource "aws_iam_instance_profile" "emr_instance" {
  name = "${var.name}-emr-instance"
  role = aws_iam_role.emr_instance.name
}

# ----------------------------------------------------------------------------- EMR
resource "aws_emr_cluster" "this" {
  name                              = var.name
  release_label                     = var.release_label
  applications                      = ["Hadoop", "Spark"]
  service_role                      = aws_iam_role.emr_service.arn
  log_uri                           = "s3://${aws_s3_bucket.this["models"].bucket}/emr-logs/"
  termination_protection            = false
  keep_job_flow_alive_when_no_steps = !var.auto_terminate

  ec2_attributes {
    subnet_id        = var.subnet_id
    instance_profile = aws_iam_instance_profile.emr_instance.arn
  }

  master_instance_group {
    instance_type = var.master_instance_type
  }

  core_instance_group {
    instance_type  = var.core_instance_type
    instance_count = var.core_instance_count
  }

  bootstrap_action {
    name = "install sparkpipe"
    path = "s3://${aws_s3_bucket.this["models"].bucket}/${aws_s3_object.bootstrap.key}"
    args = ["s3://${aws_s3_bucket.this["models"].bucket}/${aws_s3_object.wheel.key}"]
  }

  configurations_json = jsonencode([
    {
      Classification = "spark-env"
      Configurations = [{
        Classification = "export"
        Properties = {
          PYSPARK_PYTHON      = local.python
          MLFLOW_TRACKING_URI = var.mlflow_tracking_uri
        }
      }]
    },
    {
      Classification = "yarn-env"
      Configurations = [{
        Classification = "export"
        Properties     = { MLFLOW_TRACKING_URI = var.mlflow_tracking_uri }
      }]
    }
  ])

  dynamic "step" {
    for_each = var.run_pipeline_step ? [1] : []
    content {
      name              = "sparkpipe run"
      action_on_failure = "CONTINUE"
      hadoop_jar_step {
        jar  = "command-runner.jar"
        args = local.run_pipeline
      }
    }
  }

  lifecycle {
    ignore_changes = [step]
  }
}
