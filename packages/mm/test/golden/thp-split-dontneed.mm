# MADV_DONTNEED of part of a THP splits its PMD; of a whole aligned THP it zaps the PMD.
# The partial zap frees just those pages. After the whole-PMD zap the next fault maps a fresh THP;
# in the split range the table stays, and a fault maps 4 KiB pages.
mmap h 4M huge
touch h 0 4M w
madvise h 8K 8K dontneed
madvise h 2M 2M dontneed
dump h
touch h 8K 8K w
touch h 2M 4K w
dump h
