# After fork MADV_COLLAPSE gives the collapsing process its own copy; the other keeps the old frames, now mapped once.
mmap a 4M
touch a 0 2M w
madvise a 0 2M hugepage
fork
c touch a 0 4K r
madvise a 0 2M collapse
dump a
