<?php
// Front controller: every unknown path lands here (try_files ... /index.php).
header('Content-Type: text/plain');
echo "front: ", $_SERVER['REQUEST_URI'] ?? '', "\n";
echo "SCRIPT_NAME: ", $_SERVER['SCRIPT_NAME'] ?? '', "\n";
echo "PATH_INFO: ", $_SERVER['PATH_INFO'] ?? '', "\n";
