# Once the child that copied a page of a shared THP exits, a parent write reuses the whole THP.
# The parent maps the folio alone again: its write fault keeps the PMD and copies nothing.
mmap h 2M huge
touch h 0 2M w
fork
c touch h 4K 4K w
c exit
dump h
touch h 8K 4K w
dump h
