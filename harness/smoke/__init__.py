"""The post-deploy smoke gate: probes through the ALB, judged as one gate."""
