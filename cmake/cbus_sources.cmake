# libcbus's sources, bus/ and producer/: the one list of them, for every
# build that compiles the library (the top-level CMakeLists.txt, static and
# shared; bindings/node/CMakeLists.txt, the Node addon with cbus inside).
# Paths are from the repository root.  A new file in bus/ or producer/ is
# added here: a file missing from the list is a link error, not silence.
set(CBUS_LIB_SOURCE_FILES
  bus/shm.c bus/liveness.c bus/peek.c bus/gate.c bus/consumer.c bus/tail.c bus/body.c
  bus/admit.c bus/clock.c bus/proc.c bus/guard.c bus/util.c bus/version.c
  producer/producer.c producer/emit.c producer/ctx.c producer/ids.c producer/admit.c
  producer/conversation.c)
