<?php
// A Location header with no Status: PHP turns it into a 302.
header('Location: /hello.php');
