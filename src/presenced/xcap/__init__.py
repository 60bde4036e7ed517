"""The XCAP server (RFC 4825): presence rules (RFC 5025 pres-rules) over HTTP.

Sans-IO modules: `uri` (XCAP URIs), `selectors` (node selectors on an lxml tree, the §8.2
edits), `auids` (the application usages served), `caps` (the xcap-caps document), `errors`
(the §11 error bodies), `conditions` (ETag preconditions). `server` is the aiohttp adapter.
"""
