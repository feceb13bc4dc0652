<?php
// The common case where the app dominates: 10 ms of waiting per request.
usleep(10000);
echo "slept 10 ms\n";
