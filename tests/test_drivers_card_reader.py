"""Card readers: frames cut from a byte stream, tracks parsed, and a simulated reader on
a real pseudo-terminal line sending good, noisy and split frames, unplugged mid-run."""

from __future__ import annotations

import queue
from pathlib import Path

import pytest

from drivers.card_reader import CardRead, mask_card_no, parse_card_frame
from drivers.framing import FrameSplitter, Framing, Rejected
from drivers.input import InputDevice
from drivers.link import DeviceState, SerialLink, SerialSettings
from serial_devices import WAIT_S, PtyPort


class FakeClock:
    """Time for the splitter's frame gap, moved by the test (not a timing goal)."""

    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


@pytest.mark.parametrize(
    ("frame", "card_no", "source"),
    [
        (b";6200001234?", "6200001234", "track2"),
        (b";6200001234=25121010000?", "6200001234", "track2"),
        (b"%B6200001234^ZHANG/SAN^2512101?;6200001234=2512101?", "6200001234", "track2"),
        (b"%B6200001234^ZHANG/SAN^2512101?", "6200001234", "track1"),
        (b"%VIP0001?", "VIP0001", "track1"),
        (b";6200001234?;0123=45?", "6200001234", "track2"),
        (b"VIP0001", "VIP0001", "line"),
        (b"04A2B3C4D5", "04A2B3C4D5", "line"),
    ],
)
def test_good_frames_give_the_card_number(frame: bytes, card_no: str, source: str) -> None:
    assert parse_card_frame(frame) == CardRead(card_no, source)


@pytest.mark.parametrize(
    "frame",
    [
        b";6200001234",  # no end sentinel: the reader stopped mid-track
        b"6200001234?",  # no start sentinel
        b";62000O1234?",  # a letter on track 2 (4-bit digits only): a misread
        b";6200001234?x",  # trailing noise
        b"\x00;6200001234?",  # leading noise
        b";62\xff00001234?",  # a byte outside ASCII
        b";E?",  # the reader's own "bad read"
        b"%B6200001234^ZHANG/SAN^2512?;6200001235=2512?",  # tracks disagree
        b";123?",  # too short for a card number
        b";" + b"1" * 33 + b"?",  # too long
        b"VIP 0001",  # RFID line with a space
        b"VIP0001?",  # a line with a sentinel in it
    ],
)
def test_bad_frames_are_rejected_never_trimmed(frame: bytes) -> None:
    result = parse_card_frame(frame)
    assert isinstance(result, Rejected), result
    assert result.reason


def test_format_magstripe_refuses_a_bare_line_and_line_refuses_a_track() -> None:
    assert isinstance(parse_card_frame(b"6200001234", "magstripe"), Rejected)
    assert isinstance(parse_card_frame(b";6200001234?", "line"), Rejected)


def test_masks_keep_only_the_last_four() -> None:
    assert mask_card_no("6200001234") == "******1234"
    assert mask_card_no("1234") == "****"
    assert "6200001234" not in repr(CardRead("6200001234", "track2"))


def test_splitter_joins_a_frame_split_across_reads() -> None:
    splitter = FrameSplitter(Framing(suffix=b"\r"), clock=FakeClock())
    assert splitter.feed(b";62000") == []
    assert splitter.feed(b"01234?\r;99") == [b";6200001234?"]
    assert splitter.feed(b"99999999?\r\n") == [b";9999999999?"]


def test_splitter_drops_a_partial_frame_after_the_gap() -> None:
    clock = FakeClock()
    splitter = FrameSplitter(Framing(suffix=b"\r", frame_gap_s=1.0), clock=clock)
    assert splitter.feed(b";620000") == []
    clock.now_s += 1.5
    # The head of a swipe that never ended is not glued to the next card's frame.
    out = splitter.feed(b";6200001234?\r")
    assert out[0] == Rejected("partial frame: no suffix within frame_gap_s", 7)
    assert out[1:] == [b";6200001234?"]


def test_splitter_buffer_is_bounded_and_resyncs_at_the_next_suffix() -> None:
    splitter = FrameSplitter(Framing(suffix=b"\r", frame_bytes_max=32), clock=FakeClock())
    out = splitter.feed(b"x" * 40)
    assert out == [Rejected("no suffix within frame_bytes_max", 40)]
    # The tail of the overlong run is no frame of its own.
    out = splitter.feed(b"1234?\r;6200001234?\r")
    assert out == [Rejected("the rest of an overlong frame", 5), b";6200001234?"]


def test_splitter_with_a_prefix_keeps_the_frame_after_the_last_prefix() -> None:
    splitter = FrameSplitter(Framing(prefix=b"\x02", suffix=b"\x03"), clock=FakeClock())
    out = splitter.feed(b"\x02;6200\x02;6200001234?\x03noise\x03")
    assert out == [
        Rejected("partial frame before a prefix", 6),
        b";6200001234?",
        Rejected("frame without its prefix", 5),
    ]


# --- a simulated reader on a real serial line ------------------------------------------------


class Reader:
    """The driver side under test: a link on the pty path and the reader thread."""

    def __init__(self, path: Path, framing: Framing) -> None:
        self.items: queue.Queue[object] = queue.Queue()
        self.states: queue.Queue[DeviceState] = queue.Queue()
        settings = SerialSettings(port=str(path), read_timeout_s=0.05, reconnect_interval_s=0.05)
        link = SerialLink("card_reader", settings, on_state=lambda _n, s, _r: self.states.put(s))
        self.device = InputDevice(
            link, FrameSplitter(framing), parse_card_frame, lambda _n, item: self.items.put(item)
        )
        self.device.start()

    def wait_state(self, state: DeviceState) -> None:
        while self.states.get(timeout=WAIT_S) is not state:
            pass

    def next_item(self) -> object:
        return self.items.get(timeout=WAIT_S)


@pytest.fixture
def line(tmp_path: Path):
    port = PtyPort(tmp_path / "card-reader")
    yield port
    port.close()


def test_reader_on_a_serial_line_reads_good_rejects_noisy_joins_split(line: PtyPort) -> None:
    reader = Reader(line.path, Framing(suffix=b"\r", frame_gap_s=10.0))
    try:
        reader.wait_state(DeviceState.UP)
        line.write(b";6200001234?\r")
        assert reader.next_item() == CardRead("6200001234", "track2")
        line.write(b"\x00\xff;6200001234?\r")  # line noise before the frame
        assert isinstance(reader.next_item(), Rejected)
        line.write(b";62000O1234?\r")  # a flipped bit: O for 0
        assert isinstance(reader.next_item(), Rejected)
        line.write(b";620000")  # one swipe in two bursts
        line.write(b"5678?\r")
        assert reader.next_item() == CardRead("6200005678", "track2")
        line.write(b"VIP0001\r\n")  # an RFID reader's line, CR LF ended
        assert reader.next_item() == CardRead("VIP0001", "line")
        assert reader.items.empty()
    finally:
        reader.device.stop()


def test_reader_survives_an_unplug_mid_frame_and_reads_after_the_replug(line: PtyPort) -> None:
    reader = Reader(line.path, Framing(suffix=b"\r", frame_gap_s=10.0))
    try:
        reader.wait_state(DeviceState.UP)
        line.write(b";6200001234?\r")
        assert reader.next_item() == CardRead("6200001234", "track2")
        line.write(b";999999")  # the cable is pulled mid-swipe
        line.wait_drained()
        line.unplug()
        reader.wait_state(DeviceState.MISSING)
        assert reader.device.link.state is DeviceState.MISSING
        line.plug()
        reader.wait_state(DeviceState.UP)
        line.write(b"1234?\r;6200004321?\r")  # the half frame's tail, then a good swipe
        # The head of the cut swipe is dropped when the device goes away (if the line
        # delivered it), its tail is no card number: only the good swipe reads.
        items = [reader.next_item()]
        while not isinstance(items[-1], CardRead):
            items.append(reader.next_item())
        assert items[-1] == CardRead("6200004321", "track2")
        assert all(isinstance(item, Rejected) for item in items[:-1]), items
        assert Rejected("partial frame: no suffix within frame_gap_s", 5) not in items
        assert any(item.size_bytes == 5 for item in items[:-1])  # "1234?" refused alone
    finally:
        reader.device.stop()


def test_a_reader_that_was_never_plugged_in_is_missing_not_an_error(tmp_path: Path) -> None:
    reader = Reader(tmp_path / "no-such-device", Framing())
    try:
        reader.wait_state(DeviceState.MISSING)
        assert "cannot open" in reader.device.link.reason
    finally:
        reader.device.stop()
