<?php
// Reports what PHP knows about the client connection: TLS, ports, the client's address.
header('Content-Type: text/plain');
foreach (['HTTPS', 'REQUEST_SCHEME', 'SERVER_PORT', 'SSL_PROTOCOL', 'SSL_CIPHER', 'REMOTE_ADDR',
          'REMOTE_PORT', 'SERVER_PROTOCOL'] as $name) {
    echo $name, ": ", $_SERVER[$name] ?? '', "\n";
}
