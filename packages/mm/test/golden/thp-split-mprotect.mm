# mprotect of part of a THP splits its PMD; the folio stays and is mapped by 512 PTEs.
# The VMA is split at the range's ends and, with it, the PMD: no longer counted as PMD-mapped.
mmap h 4M huge
touch h 0 4M w
mprotect h 1M 4K r
dump h
# The read-only page refuses writes (SIGSEGV); the rest of the split range is still writable.
touch h 1M 4K w
touch h 0 4K w
