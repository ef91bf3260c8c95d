"""`python manage.py apitoken <verb>`: create, list and revoke API tokens.

`create` prints only the key on stdout, so `KEY=$(manage.py apitoken create ... | head -1)` captures
it; everything meant for a person goes to stderr. The key is never shown again, not even by `list`.
Exit codes: 0 success, 2 bad usage (unknown user or token, bad name).
"""

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from jobs import services
from jobs.errors import InvalidInput
from jobs.management.pipes import QuietPipeCommand
from jobs.models import ApiToken

BAD_USAGE = 2


class Command(QuietPipeCommand):
    help = "Create, list and revoke API tokens."

    def add_arguments(self, parser: CommandParser) -> None:
        verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

        create = verbs.add_parser("create", help="Create a token and print its key (shown this once only).")
        create.add_argument("--user", required=True, help="Username of the token's owner.")
        create.add_argument("--name", required=True, help="What the token is for (1 to 100 characters).")
        create.add_argument(
            "--scope",
            choices=("read", "operate", "admin"),
            default="admin",
            help="What it may do: read (every write is a 403), operate, admin (default: all its user may).",
        )
        create.add_argument("--team", metavar="SLUG", help="Only this team's objects (the user must be in it).")

        listing = verbs.add_parser("list", help="List tokens, newest first (never their keys).")
        listing.add_argument("--user", help="Only this user's tokens.")

        revoke = verbs.add_parser("revoke", help="Revoke a token; requests with its key are refused from now on.")
        revoke.add_argument("token_id", metavar="ID", help="Token id, as shown by `apitoken list`.")

    def handle(self, *args, **options) -> None:
        try:
            getattr(self, f"handle_{options['verb']}")(options)
        except InvalidInput as exc:
            raise CommandError(str(exc), returncode=BAD_USAGE) from None
        except PermissionDenied as exc:
            raise CommandError(str(exc), returncode=BAD_USAGE) from None

    # --- verbs ---

    def handle_create(self, options) -> None:
        token, key = services.token_create(
            user=self._user(options["user"]), name=options["name"], scope=options["scope"], team=options["team"]
        )
        self.stdout.write(key)
        self.stderr.write(
            f"Created token {token.pk} ({token.name}) for {token.user.username}. "
            "Copy the key now, it will not be shown again.",
            style_func=self.style.WARNING,
        )

    def handle_list(self, options) -> None:
        queryset = ApiToken.objects.select_related("user")
        if options["user"]:
            queryset = queryset.filter(user=self._user(options["user"]))
        rows = list(queryset)
        self.stdout.write(
            f"{'ID':>5}  {'STATUS':7}  {'PREFIX':13}  {'USER':10}  {'SCOPE':7}  {'CREATED':16}  {'LAST USED':16}  NAME"
        )
        for token in rows:
            self.stdout.write(
                f"{token.pk:>5}  {'active' if token.is_active else 'revoked':7}  {token.prefix + '…':13}  "
                f"{token.user.username[:10]:10}  {token.scope:7}  {self._time(token.created_at):16}  "
                f"{self._time(token.last_used_at):16}  {token.name}"
            )
        self.stdout.write(f"{len(rows)} token(s).")

    def handle_revoke(self, options) -> None:
        token = self._token(options["token_id"])
        if not token.is_active:
            self.stdout.write(f"Token {token.pk} ({token.name}) was already revoked.")
            return
        services.token_revoke(token=token)
        self.stdout.write(f"Revoked token {token.pk} ({token.name}) of {token.user.username}.")

    # --- helpers ---

    def _user(self, username: str):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}.", returncode=BAD_USAGE)
        return user

    def _token(self, token_id: str) -> ApiToken:
        # Parsed here rather than with type=int, so a bad id exits 2 in-process too (call_command
        # turns argparse errors into exit code 1).
        token = None
        if token_id.isascii() and token_id.isdigit():
            token = ApiToken.objects.select_related("user").filter(pk=int(token_id)).first()
        if token is None:
            raise CommandError(f"No token with id {token_id!r}.", returncode=BAD_USAGE)
        return token

    def _time(self, value) -> str:
        return f"{timezone.localtime(value):%Y-%m-%d %H:%M}" if value else "-"
