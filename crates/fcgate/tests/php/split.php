<?php
// A script whose body outgrows its own Content-Length: the response-splitting case of
// docs/security.md. The query string decides what follows the five declared bytes.
header('Content-Length: 5');
echo "hello", $_GET['x'] ?? '';
