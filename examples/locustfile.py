"""A Locust load test whose users block the load generator's own event loop.

Locust runs every simulated user as a greenlet in one gevent hub, so one user
that computes without yielding (here: signing a payload the slow way) stalls
every other user and skews the response times Locust reports. Run it under
the agent to see where::

    monitor-agent run -- locust -f examples/locustfile.py --headless -u 5 -r 5 -t 5s \\
        --host http://127.0.0.1:8000

(any HTTP server will do as the host, e.g. the gunicorn example app).
"""
import hashlib

from locust import HttpUser, between, task


def sign(payload: bytes, rounds: int = 400_000) -> str:
    """Signs a request body by hashing it over and over: pure CPU, never yields."""
    digest = payload
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


class ApiUser(HttpUser):
    wait_time = between(0.1, 0.3)

    @task(5)
    def index(self) -> None:
        self.client.get("/")

    @task(1)
    def signed_upload(self) -> None:
        body = b"x" * 1024
        self.client.post("/", data=body, headers={"X-Signature": sign(body)})
