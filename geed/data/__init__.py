"""Data: rotated digits (:mod:`~geed.data.digits`), the out-of-distribution sets
(:mod:`~geed.data.ood`) and the image-patch tasks of Sections 4.3-4.4 (:mod:`~geed.data.patches`).
Every loader reads local files or data shipped in packages; nothing is downloaded."""
