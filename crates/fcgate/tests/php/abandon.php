<?php
// Logs ?token= to `env[EXECUTION_LOG]` as soon as it starts, then holds the worker for ?ms=:
// a script whose client may leave while it runs, for the tests that count abandoned scripts.
file_put_contents(getenv('EXECUTION_LOG'), ($_GET['token'] ?? '-') . "\n", FILE_APPEND | LOCK_EX);
usleep(max(0, (int)($_GET['ms'] ?? 0)) * 1000);
header('Content-Type: text/plain');
echo "done\n";
