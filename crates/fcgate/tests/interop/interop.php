<?php
// php-cgi and php-fpm in PHP mode: the same answers as the other interop apps.
$op = $_GET['op'] ?? '';
if ($op === 'echo') {
    header('Content-Type: text/plain');
    echo "echo: {$_GET['word']}\n";
} elseif ($op === 'hash') {
    $body = file_get_contents('php://input');
    header('Content-Type: text/plain');
    printf("length: %d\nmd5: %s\n", strlen($body), md5($body));
} elseif ($op === 'big') {
    header('Content-Type: application/octet-stream');
    for ($i = 0, $n = (int) $_GET['lines']; $i < $n; $i++) {
        printf("%015d\n", $i);
    }
} else {
    http_response_code(418);
    // Names the SAPI that ran it, so a test cannot pass on the wrong PHP.
    header('X-Interop: ' . (PHP_SAPI === 'fpm-fcgi' ? 'php-fpm' : 'php-cgi'));
    header('Content-Type: text/plain');
    echo "teapot\n";
}
