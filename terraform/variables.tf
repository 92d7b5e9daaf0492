variable "region" {
  description = "AWS region of the cluster and the buckets."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Prefix of every resource name (buckets get the account id appended)."
  type        = string
  default     = "sparkpipe"
}

variable "subnet_id" {
  description = "Subnet of the EMR cluster (private, with a NAT or S3 endpoint for PyPI and S3)."
  type        = string
}

variable "release_label" {
  description = "EMR release. sparkpipe is built and tested on Spark 4 (pyspark 4.3): use a release with Spark 4 where your region has one; emr-7.x ships Spark 3.5."
  type        = string
  default     = "emr-7.9.0"
  validation {
    condition     = can(regex("^emr-([7-9]|[1-9][0-9])\\.", var.release_label))
    error_message = "release_label must be emr-7.0.0 or later (Spark 3.5+)."
  }
}

variable "master_instance_type" {
  type    = string
  default = "m5.xlarge"
}

variable "core_instance_type" {
  type    = string
  default = "m5.xlarge"
}

variable "core_instance_count" {
  type    = number
  default = 2
}

variable "wheel_path" {
  description = "Local path of the sparkpipe wheel (python -m pip wheel --no-deps -w dist .), uploaded to the models bucket."
  type        = string
  default     = "../dist/sparkpipe-0.1.0-py3-none-any.whl"
}

variable "pipeline_config_path" {
  description = "Local path of the pipeline config the EMR step runs."
  type        = string
  default     = "../config/examples/emr.yaml"
}

variable "mlflow_tracking_uri" {
  description = "Tracking server the step logs and registers to (http(s)://...). Its artifact store can be the mlflow bucket below."
  type        = string
}

variable "run_pipeline_step" {
  description = "Add the step that runs the pipeline when the cluster starts (later runs: aws emr add-steps)."
  type        = bool
  default     = true
}

variable "auto_terminate" {
  description = "Terminate the cluster when its steps are done."
  type        = bool
  default     = false
}

variable "tags" {
  type    = map(string)
  default = {}
}
