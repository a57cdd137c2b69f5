#!/bin/sh
# bus/ is the segment and its consumers; producer/ builds on it.  No bus/ file
# may include a producer/ header (issue 13 item 4), so the bus layer builds
# and is reasoned about without the producer's internals.
src=${1:?usage: layering.sh SOURCE_DIR}
bad=$(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"][^>"]*producer[_/]' "$src"/bus/*.c "$src"/bus/*.h 2>/dev/null)
if [ -n "$bad" ]; then
    echo "bus/ includes producer internals:"
    echo "$bad"
    exit 1
fi
echo "layering: bus/ includes no producer/ header"
