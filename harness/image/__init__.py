"""The container image the service runs, checked without a Docker engine: fetch (fetch.py: skopeo, from a
registry, ECR, a `docker save` archive or an OCI layout), unpack (unpack.py: verified and bounded), gather
facts with pytest-testinfra through a sandboxed backend (inspect.py, sandbox.py), judge (judges.py, pure);
oci.py reads and writes the layouts."""
