# A write to a THP shared after fork splits the writer's PMD and copies only one 4 KiB page.
mmap h 2M huge
touch h 0 2M w
fork
dump h
# The child's PMD is split; the parent keeps its PMD.
c touch h 4K 4K w
dump h
# The folio is still mapped by both processes, so the parent's write splits its PMD and copies
# its one page too, although the page it writes is mapped only by the parent after the split.
touch h 8K 4K w
dump h
