# MADV_COLLAPSE copies lazily-freed pages too: the new THP is an ordinary one that MADV_PAGEOUT splits but keeps.
mmap a 4M
touch a 0 64K w
madvise a 0 64K free
madvise a 0 4M hugepage
madvise a 0 2M collapse
madvise a 0 2M pageout
dump a
