"""The customer display: CD5220 bytes decoded by the tests' own parser, lines that fit
20 columns without cutting an amount, and a display on a real serial line that is
unplugged and shows its screen again when it comes back."""

from __future__ import annotations

from pathlib import Path

from drivers.display import DisplaySettings, PoleDisplay, Screen, amount_line, encode_screen
from drivers.link import DeviceState, SerialLink, SerialSettings
from serial_devices import DeviceEnd, PtyPort, decode_display, wait_until


def test_a_screen_in_cd5220_commands() -> None:
    data = encode_screen(Screen("张* 金卡 Gold", "余额 Balance 3120.00"), DisplaySettings())
    assert data.startswith(b"\x0c\x1bQA")
    (screen,) = decode_display(data)
    assert screen.upper == "张* 金卡 Gold".ljust(20 - 3)  # three wide characters, 2 bytes each
    assert screen.lower.rstrip() == "余额 Balance 3120.00"


def test_amounts_are_right_aligned_and_never_cut() -> None:
    line = amount_line("应付 Due", 5_265, 20, "gb18030")
    assert line.encode("gb18030") == "应付 Due".encode("gb18030") + b" " * 7 + b"52.65"
    # The label gives way to a long amount, the amount stays whole.
    long = amount_line("找零 Change", 99_999_999_999_999, 20, "gb18030")
    assert long == "找零 999999999999.99"
    assert amount_line("Balance", 12_345_678_901_234_567, 20, "gb18030") == "123456789012345.67"[
        -20:
    ].rjust(20)


def test_an_ascii_display_gets_no_double_byte_characters() -> None:
    settings = DisplaySettings(encoding="ascii")
    (screen,) = decode_display(encode_screen(Screen("张* Gold", "Due 1.00"), settings), "ascii")
    assert screen.upper.rstrip() == "?* Gold"


def test_display_on_a_serial_line_is_redrawn_after_a_replug(tmp_path: Path) -> None:
    port = PtyPort(tmp_path / "display")
    end = DeviceEnd(port)
    settings = SerialSettings(port=str(port.path), reconnect_interval_s=0.05)
    display = PoleDisplay(SerialLink("display", settings), DisplaySettings())
    try:
        assert display.show(Screen("张* 金卡 Gold", "Balance 3120.00"))
        end.wait_for(b"\x1bQB")
        assert display.refresh()  # nothing new to show: nothing sent
        port.unplug()
        # Noticed without anything sent to it (the hang-up reaches the port soon after).
        wait_until(lambda: not display.link.probe(), "the display to be seen missing")
        assert display.link.state is DeviceState.MISSING
        assert not display.show(Screen("应付 Due 52.65", "找零 Change 47.35"))
        port.plug()
        mark = len(end.snapshot())
        wait_until(display.refresh, "the replugged display to be redrawn")  # the bridge's tick
        end.wait_for(b"\x1bQB", mark)
        shown = end.snapshot()[mark:]
        assert shown.startswith(b"\x1b@")  # a display that powered up is reset first
        (screen,) = decode_display(shown)
        assert (screen.upper.rstrip(), screen.lower.rstrip()) == (
            "应付 Due 52.65",
            "找零 Change 47.35",
        )
    finally:
        display.link.close()
        end.stop()
        port.close()
