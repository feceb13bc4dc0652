<?php
header('Content-Type: text/plain');
echo "dir index: ", $_SERVER['SCRIPT_NAME'] ?? '', "\n";
