<?php
// size=N bytes of "0123456789" repeated, written in chunks; no Content-Length from the script,
// so the gateway has to frame the body itself.
header('Content-Type: application/octet-stream');
$size = max(0, (int)($_GET['size'] ?? 0));
$chunk = str_repeat('0123456789', 6554); // 65540 bytes, a multiple of the 10-byte pattern
while ($size > 0) {
    $part = min($size, strlen($chunk));
    echo substr($chunk, 0, $part);
    $size -= $part;
}
