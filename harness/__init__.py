"""Verification harness for the Dougust deployment on AWS (ECS Fargate, ALB, RDS PostgreSQL)."""
