include:
  - ocfs2.package
  - ocfs2.config
  - ocfs2.service
  - ocfs2.format
  - ocfs2.mount
