<?php
// One line per execution, so bench/faults.sh can tell executions from acknowledged responses:
// an id in the file twice means the gateway ran one POST twice.
$id = $_GET['id'] ?? 'none';
file_put_contents(getenv('FAULTS_EXECUTIONS') ?: '/dev/null', "$id\n", FILE_APPEND | LOCK_EX);
echo "executed $id\n";
