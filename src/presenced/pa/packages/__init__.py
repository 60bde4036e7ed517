"""Event packages beside presence: pure document logic (parse, compose, encode) per package.

dialog_info (RFC 4235, ``Event: dialog``), message_summary (RFC 3842, ``Event: message-summary``)
and reginfo (RFC 3680, ``Event: reg``). Sans-IO like the rest of ``pa/``: bytes in, bytes out.
"""
