# fork copies a page table even when all its entries are none, so the child cannot map a THP there.
# The child's fault under the copied empty table maps a 4 KiB page, while a PMD that is empty in
# the parent stays empty in the child and takes a THP.
mmap h 4M huge
madvise h 0 4M nohugepage
touch h 0 16K w
madvise h 0 4M hugepage
madvise h 0 16K dontneed
fork
c touch h 0 4K w
c touch h 2M 4K w
dump h
