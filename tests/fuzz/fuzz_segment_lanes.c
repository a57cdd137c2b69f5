/* Target: the segment target on a bus of two lanes (issue 13).  The same
 * harness (see fuzz_segment.c): with FUZZ_LANES set it creates the bus with
 * opts.lanes, aims tail and slot ops at either lane, scribbles the lane
 * table, lane owner words and per-lane consumer cursors, and attaches
 * CBUS_START_CURSOR consumers with a position vector.  Its corpus is
 * corpus/segment_lanes/. */
#define FUZZ_LANES 2
#include "fuzz_segment.c"
