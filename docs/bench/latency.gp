# written by cbus-compare: gnuplot latency.gp (in this directory) -> latency.png
set terminal pngcairo size 1100,640 font 'sans,10' noenhanced
set output 'latency.png'
set title 'ns per event by percentile (batches of 32, llm_end payload, median run)'
set logscale y
set format y '%g'
set grid ytics mytics xtics
set ylabel 'ns per event'
set xlabel 'percentile of 32-event batches'
set xtics ('p0' 0, 'p50' 0.30103, 'p90' 1, 'p99' 2, 'p99.9' 3)
set xrange [0:3]
set key outside right top
set linetype 1 lc rgb '#1f77b4'
set linetype 2 lc rgb '#d62728'
set linetype 3 lc rgb '#2ca02c'
set linetype 4 lc rgb '#ff7f0e'
set linetype 5 lc rgb '#9467bd'
set linetype 6 lc rgb '#8c564b'
set linetype 7 lc rgb '#e377c2'
set linetype 8 lc rgb '#7f7f7f'
set linetype 9 lc rgb '#bcbd22'
set linetype 10 lc rgb '#17becf'
set linetype 11 lc rgb '#000000'
set linetype 12 lc rgb '#aec7e8'
plot for [i=3:11] 'latency.dat' using 1:i with lines lw 2 title columnheader(i)
