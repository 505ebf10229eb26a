"""S3 buckets: the one log bucket every S3 log writer shares, and the bucket factory the backup step
uses too."""
from __future__ import annotations

from harness.local.provision.context import Run, absent_on
from harness.local.provision.iam import policy_document


def bucket(run: Run, name: str, policy: str | None) -> str:
    """The bucket `name` in the run's region, tagged, with `policy` when one is given."""
    s3 = run.client("s3")

    def find() -> str | None:
        def head() -> str:
            s3.head_bucket(Bucket=name)
            return name

        return absent_on(head, "404", "NoSuchBucket", "NotFound")

    def create() -> str:
        location = {} if run.region == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": run.region}}
        s3.create_bucket(Bucket=name, **location)
        s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": run.tag_list()})
        if policy:
            s3.put_bucket_policy(Bucket=name, Policy=policy)
        return name

    return run.ensure("s3 bucket", find, create, lambda b: b)


def log_bucket(run: Run) -> None:
    """One bucket for the three log writers that need S3 (flow logs, ALB access logs, CloudTrail), with
    the bucket policy each delivery service requires on AWS."""
    name = f"{run.name('logs')}-{run.account}"
    arn = f"arn:aws:s3:::{name}"
    account_objects = f"AWSLogs/{run.account}/*"
    owner_full_control = {"StringEquals": {"s3:x-amz-acl": "bucket-owner-full-control"}}
    policy = policy_document(
        {"Sid": "AclCheck", "Effect": "Allow", "Action": "s3:GetBucketAcl", "Resource": arn,
         "Principal": {"Service": ["delivery.logs.amazonaws.com", "cloudtrail.amazonaws.com"]}},
        {"Sid": "FlowLogs", "Effect": "Allow", "Principal": {"Service": "delivery.logs.amazonaws.com"},
         "Action": "s3:PutObject", "Resource": f"{arn}/{account_objects}", "Condition": owner_full_control},
        {"Sid": "AlbAccessLogs", "Effect": "Allow",
         "Principal": {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"},
         "Action": "s3:PutObject", "Resource": f"{arn}/alb/{account_objects}"},
        {"Sid": "CloudTrail", "Effect": "Allow", "Principal": {"Service": "cloudtrail.amazonaws.com"},
         "Action": "s3:PutObject", "Resource": f"{arn}/cloudtrail/{account_objects}",
         "Condition": owner_full_control},
    )
    run.built["log bucket"] = bucket(run, name, policy)
