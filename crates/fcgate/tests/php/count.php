<?php
// Appends ?token= to the file the pool's `env[EXECUTION_LOG]` names, one line per run, so a test
// can count how often each request really executed (a retried POST must never run twice).
$token = $_GET['token'] ?? '-';
file_put_contents(getenv('EXECUTION_LOG'), $token . "\n", FILE_APPEND | LOCK_EX);
header('Content-Type: text/plain');
echo "ran: ", $token, "\nbody_length: ", strlen(file_get_contents('php://input')), "\n";
