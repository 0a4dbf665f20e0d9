"""cupy.cuda.compiler of the emulated device: its compile error type."""

from __future__ import annotations


class CompileException(Exception):
    def __init__(self, msg: str, source: str = "", name: str = "", options: tuple = ()) -> None:
        self._msg = msg
        self.source = source
        self.name = name
        self.options = options
        super().__init__(msg)

    def get_message(self) -> str:
        return self._msg
