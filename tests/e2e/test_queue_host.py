"""The local host's queue trigger, driven against Azurite with real messages."""

from __future__ import annotations

import base64
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator

import azure.functions as func
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from devhost.host import Indexed, QueueOptions, QueuePoller, index_app, parse_timespan
from devhost.settings_file import ROOT
from tests.support.servers import Azurite

pytestmark = pytest.mark.integration
CONNECTION = "QUEUE_HOST_TEST_STORAGE"


@pytest.fixture
def queue_name(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"release-{secrets.token_hex(4)}"
    monkeypatch.setenv("TEST_RELEASE_QUEUE", name)
    monkeypatch.setenv(CONNECTION, azurite.connection_string())
    return name


@pytest.fixture
def sender(azurite: Azurite, queue_name: str) -> Iterator[QueueClient]:
    """Sends as the app does: base64 text, as the Functions host expects by default."""
    client = QueueClient.from_connection_string(
        azurite.connection_string(), queue_name, message_encode_policy=TextBase64EncodePolicy()
    )
    client.create_queue()
    yield client
    client.close()


def raw_client(azurite: Azurite, name: str) -> QueueClient:
    return QueueClient.from_connection_string(azurite.connection_string(), name)


def app_with(handler: Callable[[func.QueueMessage], None]) -> Indexed:
    app = func.FunctionApp()

    @app.function_name("release_package")
    @app.queue_trigger(arg_name="message", queue_name="%TEST_RELEASE_QUEUE%", connection=CONNECTION)
    def release_package(message: func.QueueMessage) -> None:
        handler(message)

    return index_app(app)


@pytest.fixture
def pollers() -> Iterator[Callable[..., QueuePoller]]:
    made: list[QueuePoller] = []

    def make(indexed: Indexed, options: QueueOptions | None = None, **kwargs: float) -> QueuePoller:
        made.append(QueuePoller(indexed.queues, options, **kwargs))
        return made[-1]

    yield make
    for poller in made:
        poller.close()


def message_count(client: QueueClient) -> int:
    """Visible and hidden messages alike."""
    return int(client.get_queue_properties().approximate_message_count)


def test_a_message_runs_once_with_its_decoded_body_and_is_deleted(
    queue_name: str, sender: QueueClient, pollers: Callable[..., QueuePoller]
) -> None:
    seen: list[func.QueueMessage] = []
    indexed = app_with(seen.append)
    assert [(q.name, q.queue, q.arg, q.connection) for q in indexed.queues] == [
        ("release_package", queue_name, "message", CONNECTION)
    ]
    poller = pollers(indexed)
    body = json.dumps({"package_id": "pkg-ünï", "approver": "a@dsh.example"})
    sent = sender.send_message(body)

    assert poller.poll_once() == 1
    assert poller.poll_once() == 0
    assert len(seen) == 1
    message = seen[0]
    assert isinstance(message, func.QueueMessage)
    assert message.get_body() == body.encode("utf-8")
    assert message.get_json()["package_id"] == "pkg-ünï"
    assert message.id == sent.id
    assert message.dequeue_count == 1
    assert message.insertion_time is not None and message.expiration_time is not None
    assert message.pop_receipt
    assert message_count(sender) == 0


def test_a_batch_runs_concurrently(sender: QueueClient, pollers: Callable[..., QueuePoller]) -> None:
    barrier = threading.Barrier(4, timeout=5)
    passed: list[bytes] = []

    def handler(message: func.QueueMessage) -> None:
        barrier.wait()  # breaks (and the handler fails) unless all four run at once
        passed.append(message.get_body())

    poller = pollers(app_with(handler))
    for n in range(4):
        sender.send_message(f"message {n}")

    assert poller.poll_once() == 4
    assert sorted(passed) == [f"message {n}".encode() for n in range(4)]
    assert message_count(sender) == 0


def test_a_failing_message_is_retried_then_moved_to_the_poison_queue(
    azurite: Azurite,
    queue_name: str,
    sender: QueueClient,
    pollers: Callable[..., QueuePoller],
    caplog: pytest.LogCaptureFixture,
) -> None:
    counts: list[int | None] = []

    def handler(message: func.QueueMessage) -> None:
        counts.append(message.dequeue_count)
        raise RuntimeError("release failed")

    poller = pollers(app_with(handler), QueueOptions(visibility_timeout=0, max_dequeue_count=3))
    sender.send_message("poison me")

    with caplog.at_level(logging.WARNING, logger="devhost"):
        for _ in range(10):
            if poller.poll_once() == 0:
                break
    assert counts == [1, 2, 3]
    assert message_count(sender) == 0
    poison = raw_client(azurite, f"{queue_name}-poison")
    [moved] = poison.peek_messages()
    assert base64.b64decode(moved.content) == b"poison me"
    assert f"Message has reached MaxDequeueCount of 3. Moving message to queue '{queue_name}-poison'." in caplog.text


def test_a_message_that_fails_once_is_retried_after_the_visibility_timeout(
    azurite: Azurite, queue_name: str, sender: QueueClient, pollers: Callable[..., QueuePoller]
) -> None:
    counts: list[int | None] = []

    def handler(message: func.QueueMessage) -> None:
        counts.append(message.dequeue_count)
        if len(counts) == 1:
            raise RuntimeError("transient")

    poller = pollers(app_with(handler), QueueOptions(visibility_timeout=1))
    sender.send_message("retry me")

    assert poller.poll_once() == 1
    assert poller.poll_once() == 0  # hidden for visibilityTimeout after the failure
    deadline = time.monotonic() + 5
    while poller.poll_once() == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert counts == [1, 2]
    assert message_count(sender) == 0
    with pytest.raises(ResourceNotFoundError):
        raw_client(azurite, f"{queue_name}-poison").get_queue_properties()


def test_a_message_that_is_not_base64_goes_to_the_poison_queue_without_running(
    azurite: Azurite, queue_name: str, sender: QueueClient, pollers: Callable[..., QueuePoller]
) -> None:
    ran: list[func.QueueMessage] = []
    poller = pollers(app_with(ran.append))
    raw_client(azurite, queue_name).send_message("not base64!")

    assert poller.poll_once() == 0
    assert ran == []
    assert message_count(sender) == 0
    [moved] = raw_client(azurite, f"{queue_name}-poison").peek_messages()
    assert moved.content == "not base64!"


def test_the_polling_loop_picks_up_new_messages_and_keeps_long_runs_hidden(
    sender: QueueClient, pollers: Callable[..., QueuePoller]
) -> None:
    ran: list[int | None] = []
    finished = threading.Event()

    def handler(message: func.QueueMessage) -> None:
        ran.append(message.dequeue_count)
        time.sleep(2.5)  # longer than the in-flight visibility: only renewal keeps it from a second delivery
        finished.set()

    poller = pollers(app_with(handler), QueueOptions(max_polling_interval=0.5), in_flight_visibility=1)
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(stop,), daemon=True)
    thread.start()
    try:
        time.sleep(0.8)  # the loop is idle and backing off when the message arrives
        sender.send_message("long release")
        assert finished.wait(8)
        deadline = time.monotonic() + 5
        while message_count(sender) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert message_count(sender) == 0
        assert ran == [1]
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


def test_the_projects_host_json_queue_settings() -> None:
    options = QueueOptions.from_host_json(json.loads((ROOT / "host.json").read_text()))
    assert options == QueueOptions(
        max_polling_interval=2, visibility_timeout=5, batch_size=16, max_dequeue_count=5, message_encoding="base64"
    )
    assert (options.threshold, options.concurrency) == (8, 24)
    assert QueueOptions.from_host_json({}) == QueueOptions(max_polling_interval=60)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("00:00:02", 2), ("00:01", 60), ("1.02:03:04.5", 93784.5), ("2", 2 * 86400), ("-00:00:01", -1)],
)
def test_timespans_parse_as_dotnet_does(text: str, seconds: float) -> None:
    assert parse_timespan(text) == seconds


@pytest.mark.parametrize("text", ["2s", "00:60:00", "", "1:2:3:4"])
def test_bad_timespans_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timespan(text)
