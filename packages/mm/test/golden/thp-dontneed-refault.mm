# MADV_DONTNEED frees a page table it empties only if it covers the table's whole 2 MiB.
# (PT_RECLAIM.) Then a later fault there can map a THP again. A smaller range leaves an empty
# table behind, and a fault under it maps a 4 KiB page.
mmap h 4M huge
madvise h 0 4M nohugepage
touch h 0 16K w
touch h 2M 16K w
madvise h 0 4M hugepage
madvise h 0 16K dontneed
madvise h 2M 2M dontneed
touch h 0 4K w
touch h 2M 4K w
dump h
