<?php
// Three separate Set-Cookie headers: the gateway must not fold them into one.
setcookie('first', 'one');
setcookie('second', 'two', ['path' => '/']);
setcookie('third', 'three', ['httponly' => true]);
header('Content-Type: text/plain');
echo "cookies set\n";
