"""One round of N workers on one manifest, through intake, sign-off and release: shared by the
concurrency test and benchmarks/bench_concurrency.py, so the figures and the test count the same.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from azure.storage.blob import BlobServiceClient

from shared.bootstrap import Services
from shared.domain.audit import verify_chain
from shared.errors import Conflict, InProgress
from tests.support.flow import signoff_tokens
from tests.support.packages import stage_new
from tests.support.servers import SmtpSink

ONCE = ("signoff_completed", "sealed", "grant_created", "recipient_notified", "granted")


def together(workers: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` on ``workers`` threads released at the same moment; typed conflicts count as done."""
    start = threading.Barrier(workers, timeout=60)

    def run(i: int) -> Any:
        start.wait()
        try:
            return work(i)
        except Conflict as exc:  # the loser of a race on the same change: "done by another"
            return exc

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, range(workers)))


@dataclass(frozen=True)
class Round:
    package_id: str
    status: str
    grants: int
    active_policies: int
    link_emails: int
    most_signoff_emails_to_one_person: int
    audit_problems: list[str]
    repeated_events: list[str]
    left_staged: int  # blobs still under the package's staging folder once it is granted

    @property
    def exact(self) -> bool:
        return (
            self.status == "granted"
            and self.grants == 1
            and self.active_policies == 1
            and self.link_emails == 1
            and self.most_signoff_emails_to_one_person == 1
            and not self.audit_problems
            and not self.repeated_events
            and self.left_staged == 0
        )


def run_round(instances: list[Services], blob_service: BlobServiceClient, smtp: SmtpSink) -> Round:
    """Every worker handles the staged manifest at once; three people approve at once; every worker
    then handles the one release message at once (as a redelivered message would be)."""
    workers = len(instances)
    smtp.clear()
    package_id, raw = stage_new(instances[0], blob_service)
    together(workers, lambda i: instances[i].intake.process(package_id, raw))
    tokens = list(signoff_tokens(smtp, package_id).items())
    most = max((len(smtp.to(person)) for person, _ in tokens), default=0)
    together(len(tokens), lambda i: instances[i % workers].signoff.decide(tokens[i][1], "approve", 2, None, None))
    record = instances[0].registry.get_package(package_id)
    digest = record.manifest_sha256 if record else ""

    def release(i: int) -> str:
        try:
            if instances[i].seal.seal(package_id, digest) is not None:
                instances[i].deliver.deliver(package_id)
        except InProgress:  # another worker holds the sealing claim: the host retries this message
            return "handed back"
        return "done"

    if "handed back" in together(workers, release):
        release(0)  # the host's retry of a handed-back message, once the claim's holder is done
    record = instances[0].registry.get_package(package_id)
    grants = instances[0].registry.list_grants(package_id=package_id)
    entries = instances[0].audit.read(package_id)
    actions = [e.action for e in entries]
    return Round(
        package_id=package_id,
        status=record.status.value if record else "none",
        grants=len(grants),
        active_policies=len(instances[0].delivery.stored_policies(f"egress-{package_id}")),
        link_emails=len([m for m in smtp.to("ada@provider.example") if "ready to download" in str(m["Subject"])]),
        most_signoff_emails_to_one_person=most,
        audit_problems=verify_chain(entries, package_id, instances[0].audit.anchor(package_id)),
        repeated_events=[a for a in ONCE if actions.count(a) != 1],
        left_staged=len(
            list(instances[0].staging.list_blobs(instances[0].settings.staging_container, f"{package_id}/"))
        ),
    )
