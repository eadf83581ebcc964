"""Several worker processes on localhost for the multi-worker tests: free ports and TF_CONFIG."""

import json
import socket
from typing import Dict, List


def free_ports(n: int) -> List[int]:
  """`n` TCP ports free on 127.0.0.1 right now."""
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


def tf_config(ports: List[int], index: int) -> Dict[str, str]:
  """The `TF_CONFIG` environment entry of worker `index` of a cluster of workers on `ports`."""
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
