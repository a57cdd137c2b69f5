# written by cbus-compare: gnuplot latency.gp (in this directory) -> latency.png
set terminal pngcairo size 1100,640 font 'sans,10' noenhanced
set output 'latency.png'
set title 'ns per event by percentile (batches of 32, llm_end payload, median run)'
set logscale y
set format y '%.0f'
set grid ytics mytics xtics
set ylabel 'ns per event'
set xlabel 'percentile of 32-event batches'
set xtics ('p0' 0, 'p50' 0.30103, 'p90' 1, 'p99' 2, 'p99.9' 3)
set xrange [0:3]
set key outside right top
plot for [i=3:11] 'latency.dat' using 1:i with lines lw 2 title columnheader(i)
