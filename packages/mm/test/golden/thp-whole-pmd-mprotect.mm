# mprotect of exactly an aligned THP changes its PMD in place, without a split.
# mprotect r write-protects the huge PMD; mprotect rw makes it writable again without a fault,
# because the folio is exclusive to this process.
mmap h 4M huge
touch h 0 4M w
mprotect h 2M 2M r
dump h
touch h 2M 4K w
mprotect h 2M 2M rw
touch h 2M 4K w
dump h
