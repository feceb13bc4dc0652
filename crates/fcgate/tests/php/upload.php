<?php
// The raw body's length and md5; for multipart (where PHP consumes php://input) the parsed $_FILES.
header('Content-Type: text/plain');
$input = file_get_contents('php://input');
echo "length: ", strlen($input), "\n";
echo "md5: ", md5($input), "\n";
foreach ($_FILES as $field => $file) {
    $contents = is_uploaded_file($file['tmp_name']) ? file_get_contents($file['tmp_name']) : '';
    echo "file: ", $field, " name=", $file['name'], " size=", $file['size'],
        " error=", $file['error'], " md5=", md5($contents), "\n";
}
foreach ($_POST as $field => $value) {
    echo "field: ", $field, "=", $value, "\n";
}
