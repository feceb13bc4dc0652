<?php
// Reports what PHP received, so tests can check the gateway's CGI params and body forwarding.
header('Content-Type: text/plain');
$input = file_get_contents('php://input');
echo "method: ", $_SERVER['REQUEST_METHOD'] ?? '', "\n";
echo "query: ", $_SERVER['QUERY_STRING'] ?? '', "\n";
echo "get: ", json_encode($_GET), "\n";
echo "body_length: ", strlen($input), "\n";
echo "body_md5: ", md5($input), "\n";
echo "content_type: ", $_SERVER['CONTENT_TYPE'] ?? '', "\n";
