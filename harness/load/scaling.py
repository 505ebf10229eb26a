"""What LOAD-03 observes during a load run: the service's desired and running counts over time, read from
ECS (the emulator on local, where the stand-in's ECS agent applies the provisioned scaling policy), and
the peak of the service's average CPU: CloudWatch's AWS/ECS CPUUtilization on AWS, the stand-in's own
measurement on local. Read-only calls, from a thread of the pytest process (never from Locust's)."""
from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from harness.plan import Plan
from harness.service import find_service
from harness.target import Target


@dataclass
class ScalingObserver:
    target: Target
    plan: Plan
    env: str
    interval_s: float = 1.0
    cpu_reader: Callable[[], float | None] | None = None  # local: the stand-in's average task CPU (%)
    samples: list[dict[str, Any]] = field(default_factory=list)
    cpu_samples: list[float] = field(default_factory=list)
    problem: str | None = None
    service: tuple[str, str] | None = None  # cluster ARN, service name
    cpu_target: float | None = None  # the deployed CPU target-tracking policy's target (%), None without one
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _origin: float = 0.0
    _started_at: dt.datetime | None = None

    def read_cpu_target(self) -> float | None:
        """The target the service scales on, as Application Auto Scaling holds it (not the plan's: LOAD-03
        judges what is deployed; ECS-12 judges whether that matches the plan)."""
        assert self.service is not None
        resource = f"service/{self.service[0].rsplit('/', 1)[-1]}/{self.service[1]}"
        policies = self.target.client("application-autoscaling").describe_scaling_policies(
            ServiceNamespace="ecs", ResourceId=resource)["ScalingPolicies"]
        for policy in policies:
            config = policy.get("TargetTrackingScalingPolicyConfiguration") or {}
            metric = (config.get("PredefinedMetricSpecification") or {}).get("PredefinedMetricType")
            if metric == "ECSServiceAverageCPUUtilization":
                return float(config["TargetValue"])
        return None

    def sample(self) -> None:
        assert self.service is not None
        service = self.target.client("ecs").describe_services(
            cluster=self.service[0], services=[self.service[1]])["services"][0]
        self.samples.append({"t_s": round(time.monotonic() - self._origin, 2), "desired": service["desiredCount"],
                             "running": service["runningCount"]})
        if self.cpu_reader is not None:
            cpu = self.cpu_reader()
            if cpu is not None:
                self.cpu_samples.append(cpu)

    def start(self, origin: float) -> None:
        """Sample from now on; t_s of each sample counts from `origin` (time.monotonic() of the load's start)."""
        self._origin = origin
        self._started_at = dt.datetime.now(dt.timezone.utc)
        try:
            found = find_service(self.target, self.plan, self.env)
            self.service = found["clusterArn"], found["serviceName"]
            self.cpu_target = self.read_cpu_target()
            self.sample()
        except Exception as exc:  # noqa: BLE001 - any failure to read is this check's ERROR, not the run's
            self.problem = f"the service's counts could not be read: {type(exc).__name__}: {exc}"
            return
        self._thread = threading.Thread(target=self._loop, name="scaling-observer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception as exc:  # noqa: BLE001
                self.problem = f"reading the service's counts failed during the run: {type(exc).__name__}: {exc}"
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def cpu_peak(self) -> float | None:
        """The highest average CPU of the service's tasks during the run, in percent."""
        if self.cpu_reader is not None:
            return max(self.cpu_samples, default=None)
        if self.service is None or self._started_at is None:
            return None
        cluster_name = self.service[0].rsplit("/", 1)[-1]
        try:
            points = self.target.client("cloudwatch").get_metric_statistics(
                Namespace="AWS/ECS", MetricName="CPUUtilization", Statistics=["Average"], Period=60,
                Dimensions=[{"Name": "ClusterName", "Value": cluster_name},
                            {"Name": "ServiceName", "Value": self.service[1]}],
                StartTime=self._started_at, EndTime=dt.datetime.now(dt.timezone.utc))["Datapoints"]
        except Exception:  # noqa: BLE001 - without the metric the counts alone decide (see judges.scale_out)
            return None
        return max((p["Average"] for p in points), default=None)
