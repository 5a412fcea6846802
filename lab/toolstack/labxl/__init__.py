"""The lab's Xen toolstack stand-in: ``xl`` verbs implemented over QEMU (standard library only).

It is not Xen. Each "domain" is a QEMU/TCG process on the lab host; ``xl migrate`` is a real
QEMU live migration between two lab hosts, negotiated over ssh as xl does. Output formats and
messages follow Xen's tools/xl sources so the product's parsers read it as real xl output.
"""
