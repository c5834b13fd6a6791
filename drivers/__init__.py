"""The counter hardware (终端): serial drivers for card readers, barcode/QR scanners,
ESC/POS receipt printers with their cash drawer, and customer pole displays, and the
bridge (`mms-bridge`) that connects them to the engine over gRPC. See README.md here.

Modules: `link` (a serial port that may come and go), `framing` (frames cut from a
byte stream), `card_reader`, `scanner`, `input` (a reader thread), `escpos` (the
printer's commands), `receipt` (the receipt as data and as bytes), `printer`,
`display`, `config` (terminal.toml), `engine_client`, `journal`, `metrics`, `bridge`.
"""
