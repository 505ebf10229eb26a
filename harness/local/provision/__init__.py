"""Build a plan-compliant Dougust environment into an AWS-compatible emulator, through boto3 only.

The local target needs something for the compliance suite to discover, and that something must be what
the plan asks for, so every value comes from the plan's `expected(env)`. It is written for emulators
(moto, LocalStack): their resources are usable the moment the create call returns, so nothing here waits.

Re-running is safe: every resource is looked up first (EC2 ones by the plan's tags plus a Name tag, the
rest by the name this package gives them) and only what is missing is created. An endpoint that does not
offer a service (LocalStack community answers 501 for RDS, ECS, ELBv2, ...) gets everything else; the
report says what was skipped and why.

One module per plan area builds that area's resources; `order` runs them in dependency order over the
shared `context.Run`.
"""
from harness.local.provision.context import ProvisionReport, Run
from harness.local.provision.ecs import CURRENT_IMAGE_TAG, PREVIOUS_IMAGE_TAG
from harness.local.provision.order import provision


__all__ = ["CURRENT_IMAGE_TAG", "PREVIOUS_IMAGE_TAG", "ProvisionReport", "Run", "provision"]
