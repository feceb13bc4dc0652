<?php
// Reports the $_SERVER entries that request headers become, for the header-name tests.
header('Content-Type: text/plain');
echo "HTTP_X_FORWARDED_FOR: ", $_SERVER['HTTP_X_FORWARDED_FOR'] ?? '', "\n";
echo "HTTP_HOST: ", $_SERVER['HTTP_HOST'] ?? '', "\n";
echo "HTTP_CONTENT_LENGTH: ", $_SERVER['HTTP_CONTENT_LENGTH'] ?? '', "\n";
