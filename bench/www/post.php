<?php
// A request body end to end: the gateway must pass all of it as STDIN with a right CONTENT_LENGTH.
$body = file_get_contents('php://input');
echo "received ", strlen($body), " bytes\n";
