<?php
// Hello-world: the gateway's and php-fpm's fixed cost per request.
echo "Hello, world!\n";
