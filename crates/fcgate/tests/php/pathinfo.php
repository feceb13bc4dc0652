<?php
header('Content-Type: text/plain');
echo "PATH_INFO: ", $_SERVER['PATH_INFO'] ?? '', "\n";
echo "SCRIPT_NAME: ", $_SERVER['SCRIPT_NAME'] ?? '', "\n";
