# After the child exits, a parent write to a formerly shared page faults but reuses its frame.
# The parent's PTEs are still write-protected from fork, so each write faults once, but every
# frame is mapped once again and none is copied (the frame ids stay the same).
mmap a 16K
touch a 0 16K w
fork
c touch a 0 4K w
dump a
c exit
dump a
touch a 0 16K w
dump a
