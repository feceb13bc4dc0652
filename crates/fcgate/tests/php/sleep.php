<?php
// ms=N: hold the worker for N milliseconds, then answer.
$ms = max(0, (int)($_GET['ms'] ?? 0));
usleep($ms * 1000);
header('Content-Type: text/plain');
echo "slept ", $ms, " ms\n";
