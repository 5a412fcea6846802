"""The real-kernel lab tier: VM hosts as QEMU/TCG guests booting Debian's own kernel.

The netns lab (:mod:`lab.hosts`) shares the machine's kernel, which has neither ``iscsi_tcp`` nor
OCFS2. Here ServVirt1 and ServVirt2 are full Debian 12 systems (systemd, open-iscsi,
ocfs2-tools, chrony, sanlock, a salt-minion) whose root file system the lab builds itself
(:mod:`lab.realkernel.image`), so the formulas meet a real initiator and a real cluster stack.
"""
